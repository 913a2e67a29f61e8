//! A record as a HAR entry: its request and response with their headers, cookies,
//! query and bodies (decoded, as text or base64), its timings, and this crate's extra
//! fields.

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::capture::{Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse};
use crate::http::message::Headers;

use super::json::Json;

/// The most bytes a body is decoded to for a HAR entry; one that decodes to more is
/// kept as sent (`"_contentEncoded": true`).
pub const DECODED_LIMIT: usize = 64 * 1024 * 1024;

/// Writes the HAR entry of `record` into `out`, with `timings.connect` and
/// `timings.ssl` as given (see [`facts::connect_ssl`](super::facts::connect_ssl)) and
/// the connection facts (`connection`, `_facts`). Keys come in byte order, as a
/// `serde_json::Map` writes them.
pub(super) fn write_entry(out: &mut Vec<u8>, record: &Record, connect: f64, ssl: f64) {
    let t = &record.timings;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // HAR wants send, wait and receive; a point never reached makes its phase 0, and
    // `_unknown` names it, so that a reader here does not take the 0 for a time.
    let mut unknown = Vec::new();
    if t.request_end.is_none() {
        unknown.push("send");
    }
    if t.response_first_byte.is_none() {
        unknown.push("wait");
    }
    if t.response_end.is_none() {
        unknown.push("receive");
    }
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
    let notes = &record.annotations;
    let facts = &record.facts;
    Json::new(out).object(|e| {
        if let Some(client) = record.client {
            e.key("_clientAddress").socket_addr(client);
        }
        e.bool("_clientTls", record.client_tls);
        if let Some(error) = &record.error {
            e.str("_error", error);
        }
        super::facts::write_facts(e, facts);
        // mitmproxy's comment is HAR's own; its mark and replay are ours.
        if let Some(replay) = &notes.is_replay {
            e.str("_isReplay", replay);
        }
        if !notes.marked.is_empty() {
            e.str("_marked", &notes.marked);
        }
        if record.websocket.is_some() {
            e.str("_resourceType", "websocket");
        }
        if let Some(server) = record.server {
            e.u64("_serverPort", server.port().into());
        }
        if !record.tls.is_empty() {
            super::facts::write_tls(e.key("_tls"), &record.tls);
        }
        if let Some(messages) = &record.websocket {
            write_websocket_messages(e.key("_webSocketMessages"), messages);
        }
        e.key("cache").object(|_| {});
        if !notes.comment.is_empty() {
            e.str("comment", &notes.comment);
        }
        if let Some(local) = facts.server.socket.local {
            e.key("connection").quoted_u64(local.port().into());
        }
        write_request(
            e.key("request"),
            &record.request,
            record.websocket.is_some(),
        );
        let error = record.error.as_deref();
        match &record.response {
            Some(r) => write_response(e.key("response"), r),
            None => write_no_response(e.key("response"), error),
        }
        if let Some(server) = record.server {
            e.key("serverIPAddress").ip(server.ip());
        }
        e.key("startedDateTime").rfc3339(record.started_at);
        // `connect` includes `ssl` (HAR 1.2).
        e.f64("time", send + wait + receive + connect.max(0.0));
        e.key("timings").object(|t| {
            if !unknown.is_empty() {
                t.key("_unknown").strs(unknown.iter().copied());
            }
            t.i64("blocked", -1);
            t.f64("connect", connect);
            t.i64("dns", -1);
            t.f64("receive", receive);
            t.f64("send", send);
            t.f64("ssl", ssl);
            t.f64("wait", wait);
        });
    });
}

/// WebSocket messages as Chrome's devtools save them: `type` (`send` from the client,
/// `receive` from the server), `time` (seconds since the epoch), `opcode` (1 text, 2
/// binary) and `data` (text, or base64 for binary).
fn write_websocket_messages(json: &mut Json<'_>, messages: &[RecordedMessage]) {
    json.array(|a| {
        for m in messages {
            let time =
                m.at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
            a.item().object(|o| {
                if m.text {
                    o.str("data", &String::from_utf8_lossy(&m.data));
                } else {
                    o.str(
                        "data",
                        &base64::engine::general_purpose::STANDARD.encode(&m.data),
                    );
                }
                o.u64("opcode", if m.text { 1 } else { 2 });
                o.f64("time", time);
                o.str("type", if m.from_client { "send" } else { "receive" });
            });
        }
    });
}

/// The request of an entry; a WebSocket's URL is `ws://` or `wss://`, as browsers
/// write it.
fn write_request(json: &mut Json<'_>, r: &RecordedRequest, websocket: bool) {
    let mut url = r.url();
    if websocket {
        url.replace_range(..4, "ws");
    }
    // The path as browsers write it in a URL: bytes a URL cannot hold as they are
    // (non-ASCII, spaces, controls) percent-encoded; the path as sent kept beside it
    // when that changed it.
    let encoded = percent_encode_path(&r.path);
    let raw_path = encoded != r.path;
    if raw_path {
        url.truncate(url.len() - r.path.len());
        url.push_str(&encoded);
    }
    json.object(|o| {
        if raw_path {
            o.str("_path", &r.path);
        }
        o.u64("bodySize", r.body.size);
        write_request_cookies(o.key("cookies"), &r.headers);
        write_headers(o.key("headers"), &r.headers);
        o.i64("headersSize", request_head_size(r));
        o.str("httpVersion", &r.version);
        o.str("method", &r.method);
        if r.body.size > 0 || !r.body.data.is_empty() {
            body_content(&r.headers, &r.body).write(o.key("postData"), true);
        }
        write_query_string(o.key("queryString"), &encoded);
        o.str("url", &url);
    });
}

fn write_response(json: &mut Json<'_>, r: &RecordedResponse) {
    json.object(|o| {
        o.u64("bodySize", r.body.size);
        body_content(&r.headers, &r.body).write(o.key("content"), false);
        write_response_cookies(o.key("cookies"), &r.headers);
        write_headers(o.key("headers"), &r.headers);
        o.i64("headersSize", response_head_size(r));
        o.str("httpVersion", &r.version);
        o.str("redirectURL", r.headers.get("location").unwrap_or(""));
        o.u64("status", r.status.into());
        o.str("statusText", &r.reason);
    });
}

/// The response browsers write for a request that got none (with the flow's error).
fn write_no_response(json: &mut Json<'_>, error: Option<&str>) {
    json.object(|o| {
        if let Some(error) = error {
            o.str("_error", error);
        }
        o.i64("bodySize", -1);
        o.key("content").object(|c| {
            c.str("mimeType", "x-unknown");
            c.u64("size", 0);
        });
        o.key("cookies").array(|_| {});
        o.key("headers").array(|_| {});
        o.i64("headersSize", -1);
        o.str("httpVersion", "");
        o.str("redirectURL", "");
        o.u64("status", 0);
        o.str("statusText", "");
    });
}

fn write_headers(json: &mut Json<'_>, h: &Headers) {
    json.array(|a| {
        for (name, value) in h.iter() {
            a.item().object(|o| {
                o.str("name", name);
                o.str("value", &String::from_utf8_lossy(value));
            });
        }
    });
}

/// `Cookie: a=1; b=2` as HAR cookies.
fn write_request_cookies(json: &mut Json<'_>, h: &Headers) {
    json.array(|a| {
        for v in h.get_all("cookie") {
            for pair in String::from_utf8_lossy(v).split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    a.item().object(|o| {
                        o.str("name", name.trim());
                        o.str("value", value.trim());
                    });
                }
            }
        }
    });
}

/// Each `Set-Cookie` as a HAR cookie: its name and value, and the attributes HAR
/// names (the last of each, when one is repeated).
fn write_response_cookies(json: &mut Json<'_>, h: &Headers) {
    json.array(|a| {
        for v in h.get_all("set-cookie") {
            let v = String::from_utf8_lossy(v);
            let mut parts = v.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let (mut path, mut domain, mut expires) = (None, None, None);
            let (mut http_only, mut secure) = (false, false);
            for attr in parts {
                let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
                let (key, val) = (key.trim(), val.trim());
                if key.eq_ignore_ascii_case("path") {
                    path = Some(val);
                } else if key.eq_ignore_ascii_case("domain") {
                    domain = Some(val);
                } else if key.eq_ignore_ascii_case("expires") {
                    expires = Some(val);
                } else if key.eq_ignore_ascii_case("httponly") {
                    http_only = true;
                } else if key.eq_ignore_ascii_case("secure") {
                    secure = true;
                }
            }
            a.item().object(|o| {
                if let Some(d) = domain {
                    o.str("domain", d);
                }
                if let Some(x) = expires {
                    o.str("expires", x);
                }
                if http_only {
                    o.bool("httpOnly", true);
                }
                o.str("name", name.trim());
                if let Some(p) = path {
                    o.str("path", p);
                }
                if secure {
                    o.bool("secure", true);
                }
                o.str("value", value.trim());
            });
        }
    });
}

/// The query of `path` as HAR name/value pairs, percent-decoded (`+` as a space).
fn write_query_string(json: &mut Json<'_>, path: &str) {
    json.array(|a| {
        let Some((_, query)) = path.split_once('?') else {
            return;
        };
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            a.item().object(|o| {
                o.str("name", &percent_decode(name));
                o.str("value", &percent_decode(value));
            });
        }
    });
}

/// A body as HAR has it: `content` of a response, `postData` of a request.
struct Content<'a> {
    mime: &'a str,
    /// Set when the body is kept as sent though encoded (cut, or not decodable).
    content_encoded: bool,
    /// Decoded size minus sent size, when decoded.
    compression: Option<i64>,
    size: u64,
    data: std::borrow::Cow<'a, [u8]>,
    /// The whole body's size, when only its first bytes are kept.
    truncated: Option<u64>,
    comment: Option<String>,
}

/// A body as a HAR `content` object.
fn body_content<'a>(h: &'a Headers, body: &'a RecordedBody) -> Content<'a> {
    let mime = h.get("content-type").unwrap_or("").trim();
    let mut comments = Vec::new();
    let coding = h
        .get("content-encoding")
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    let mut c = Content {
        mime,
        content_encoded: false,
        compression: None,
        size: body.size,
        data: (&body.data[..]).into(),
        truncated: body.truncated.then_some(body.size),
        comment: None,
    };
    match coding {
        Some(_) if body.truncated => {
            c.content_encoded = true;
            comments.push("kept as sent: cut, so it cannot be decoded".to_string());
        }
        Some(coding) => match crate::decode::decode(coding, &body.data, DECODED_LIMIT) {
            Ok(plain) => {
                c.size = plain.len() as u64;
                c.compression = Some(plain.len() as i64 - body.data.len() as i64);
                c.data = plain.into();
            }
            Err(e) => {
                c.content_encoded = true;
                comments.push(format!("kept as sent: {e}"));
            }
        },
        None => {}
    }
    if body.truncated {
        comments.insert(
            0,
            format!("truncated: {} of {} bytes kept", body.data.len(), body.size),
        );
    }
    if !comments.is_empty() {
        c.comment = Some(comments.join("; "));
    }
    c
}

impl Content<'_> {
    /// Writes it as a response's `content`, or as a request's `postData` (no sizes,
    /// the encoding as `_encoding`).
    fn write(&self, json: &mut Json<'_>, post: bool) {
        // Printable ASCII (most text bodies) is text, and its own JSON string: one
        // pass over it instead of a UTF-8 check, a control scan and an escape.
        let plain = super::json::is_plain(&self.data);
        let text = if plain {
            None
        } else {
            text_of(self.mime, &self.data)
        };
        let b64;
        let (text, base64) = match text {
            _ if plain => ("", false),
            Some(text) => (text, false),
            None => {
                b64 = base64::engine::general_purpose::STANDARD.encode(&self.data);
                (b64.as_str(), true)
            }
        };
        json.object(|o| {
            if self.content_encoded {
                o.bool("_contentEncoded", true);
            }
            if post && base64 {
                o.str("_encoding", "base64");
            }
            if let Some(size) = self.truncated {
                o.u64("_size", size);
                o.bool("_truncated", true);
            }
            if let Some(comment) = &self.comment {
                o.str("comment", comment);
            }
            if !post {
                if let Some(compression) = self.compression {
                    o.i64("compression", compression);
                }
                if base64 {
                    o.str("encoding", "base64");
                }
            }
            o.str("mimeType", self.mime);
            if !post {
                o.u64("size", self.size);
            }
            if plain {
                o.key("text").plain(&self.data);
            } else {
                o.str("text", text);
            }
        });
    }
}

/// The path (and query) with the bytes a URL cannot hold as they are percent-encoded,
/// as browsers send them: non-ASCII, controls, space, `"`, `<`, `>`, `` ` ``, `{`,
/// `}`. A `%` stays: the path may hold escapes already.
fn percent_encode_path(path: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_byte =
        |b: u8| b <= b' ' || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}');
    if !path.bytes().any(unsafe_byte) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 16);
    for b in path.bytes() {
        if unsafe_byte(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The bytes of an HTTP/1 request head as it went on the wire: request line, fields,
/// blank line; `-1` (unknown) for HTTP/2, whose heads are compressed.
fn request_head_size(r: &RecordedRequest) -> i64 {
    if !r.version.starts_with("HTTP/1") {
        return -1;
    }
    let target = if r.is_connect() {
        r.authority().len()
    } else {
        r.path.len()
    };
    // `METHOD SP target SP version CRLF`
    let line = r.method.len() + 1 + target + 1 + r.version.len() + 2;
    (line + fields_size(&r.headers) + 2) as i64
}

/// As [`request_head_size`], for a response: status line, fields, blank line.
fn response_head_size(r: &RecordedResponse) -> i64 {
    if !r.version.starts_with("HTTP/1") {
        return -1;
    }
    // `version SP status SP reason CRLF`
    let line = r.version.len() + 1 + 3 + 1 + r.reason.len() + 2;
    (line + fields_size(&r.headers) + 2) as i64
}

/// `name: value CRLF` for each field.
fn fields_size(h: &Headers) -> usize {
    h.iter().map(|(n, v)| n.len() + 2 + v.len() + 2).sum()
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
    (textual || !has_control(text)).then_some(text)
}

/// Whether `text` holds a control character (`char::is_control`: U+0000 to U+001F
/// and U+007F to U+009F) other than tab, line feed and carriage return. Byte by byte:
/// in UTF-8, U+0080 to U+009F are `0xC2` followed by `0x80` to `0x9F`.
fn has_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0x00..=0x1f | 0x7f => true,
        0xc2 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)),
        _ => false,
    })
}

/// `t` in RFC 3339, UTC, with milliseconds: `2026-01-02T03:04:05.678Z`.
#[cfg(test)]
pub(super) fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::new();
    push_rfc3339(&mut out, t);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `t` as [`rfc3339`] shows it: digit by digit for the years 0 to 9999 (every
/// time a flow has), through the formatting machinery for the others.
pub(super) fn push_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let nanos = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let Ok(year) = u16::try_from(t.year()) else {
        use std::io::Write as _;
        // Writing into a `Vec` cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        return;
    };
    let digits = |out: &mut Vec<u8>, n: u16, width: u32| {
        for place in (0..width).rev() {
            out.push(b'0' + (n / 10u16.pow(place) % 10) as u8);
        }
    };
    digits(out, year, 4);
    out.push(b'-');
    digits(out, u8::from(t.month()).into(), 2);
    out.push(b'-');
    digits(out, t.day().into(), 2);
    out.push(b'T');
    digits(out, t.hour().into(), 2);
    out.push(b':');
    digits(out, t.minute().into(), 2);
    out.push(b':');
    digits(out, t.second().into(), 2);
    out.push(b'.');
    digits(out, t.millisecond(), 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::capture::har::tests::{gzip, record};
    use crate::capture::RecordedTimings;

    /// `r`'s entry as a JSON value, as a reader sees it.
    fn entry(r: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        write_entry(&mut out, r, -1.0, -1.0);
        serde_json::from_slice(&out).expect("an entry is JSON")
    }

    /// `records` written by a [`HarWriter`](crate::capture::har::HarWriter) (which
    /// leaves CONNECTs out unless `keep_connects`) and read back.
    fn round_trip(records: &[Record], keep_connects: bool) -> Vec<Record> {
        let mut w = crate::capture::har::HarWriter::new(Vec::new())
            .unwrap()
            .keep_connects(keep_connects);
        for r in records {
            w.write(r).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        crate::capture::har::read_har(&path).unwrap()
    }

    #[test]
    fn control_characters_are_found_as_char_is_control_finds_them() {
        let by_chars = |t: &str| {
            t.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        };
        let mut cases: Vec<String> = ["", "plain\ttext\r\n", "caf\u{e9}", "\u{a0}\u{c2}"]
            .map(String::from)
            .to_vec();
        for c in (0u32..0x200).filter_map(char::from_u32) {
            cases.push(format!("a{c}b"));
            cases.push(format!("\u{e9}{c}"));
        }
        for case in cases {
            assert_eq!(has_control(&case), by_chars(&case), "{case:?}");
        }
    }

    #[test]
    fn raw_utf8_paths_are_percent_encoded_in_the_url_and_read_back_as_sent() {
        let r = record("/caf\u{e9} au lait?q=\u{e9}t\u{e9}&x=%41", None);
        let e = entry(&r);
        assert_eq!(
            e["request"]["url"],
            "http://a.localhost:8080/caf%C3%A9%20au%20lait?q=%C3%A9t%C3%A9&x=%41"
        );
        assert_eq!(
            e["request"]["_path"],
            "/caf\u{e9} au lait?q=\u{e9}t\u{e9}&x=%41"
        );
        assert_eq!(
            round_trip(std::slice::from_ref(&r), false)[0].request.path,
            r.request.path
        );
        // A path a URL holds as it is has no `_path`.
        assert!(entry(&record("/plain?a=%20", None))["request"]
            .get("_path")
            .is_none());
    }

    #[test]
    fn head_sizes_count_the_bytes_of_an_http1_head_and_are_unknown_for_http2() {
        let mut r = record(
            "/x?y=1",
            Some((200, &[("Content-Type", "text/plain")], Bytes::from("hi"))),
        );
        let e = entry(&r);
        let request_head = "GET /x?y=1 HTTP/1.1\r\nHost: a.localhost\r\nCookie: s=1; t=two\r\n\r\n";
        let response_head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
        assert_eq!(e["request"]["headersSize"], request_head.len());
        assert_eq!(e["response"]["headersSize"], response_head.len());
        r.request.version = "HTTP/2.0".into();
        r.response.as_mut().unwrap().version = "HTTP/2.0".into();
        let e = entry(&r);
        assert_eq!(e["request"]["headersSize"], -1);
        assert_eq!(e["response"]["headersSize"], -1);
    }

    #[test]
    fn marks_comments_and_replays_are_read_back() {
        let mut r = record("/noted", None);
        r.annotations.marked = ":star:".into();
        r.annotations.comment = "look\nhere".into();
        r.annotations.is_replay = Some("response".into());
        let e = entry(&r);
        assert_eq!(e["comment"], "look\nhere");
        let back = round_trip(std::slice::from_ref(&r), false);
        assert_eq!(back[0].annotations, r.annotations);
        // None of them: nothing written.
        let plain = entry(&record("/plain", None));
        for field in ["comment", "_marked", "_isReplay"] {
            assert!(plain.get(field).is_none(), "{field}");
        }
    }

    #[test]
    fn timings_never_reached_are_read_back_unknown() {
        let mut r = record("/failed", None);
        r.timings = RecordedTimings {
            request_end: Some(Duration::from_millis(3)),
            response_first_byte: None,
            response_end: None,
        };
        r.error = Some("connection refused".into());
        let e = entry(&r);
        assert_eq!(e["timings"]["wait"], 0.0);
        assert_eq!(e["timings"]["_unknown"], json!(["wait", "receive"]));
        let back = round_trip(std::slice::from_ref(&r), false);
        assert_eq!(back[0].timings, r.timings);
        assert!(back[0].response.is_none());
    }

    #[test]
    fn connects_are_left_out_unless_kept_and_then_read_back_as_connects() {
        let mut connect = record("", Some((200, &[], Bytes::new())));
        connect.request.method = "CONNECT".into();
        connect.request.scheme = String::new();
        let get = record("/inside", None);
        let records = [connect.clone(), get];
        let left_out = round_trip(&records, false);
        assert_eq!(left_out.len(), 1);
        assert_eq!(left_out[0].request.path, "/inside");
        let kept = round_trip(&records, true);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].request.method, "CONNECT");
        assert_eq!(kept[0].request.url(), "a.localhost:8080");
        assert_eq!(
            (
                kept[0].request.scheme.as_str(),
                kept[0].request.path.as_str()
            ),
            ("", "")
        );
    }

    #[test]
    fn a_body_encoded_again_on_reading_gets_its_own_length() {
        let text = "hello hello hello hello hello hello hello";
        // The length another compressor gave the body on the wire.
        let r = record(
            "/gz",
            Some((
                200,
                &[("Content-Encoding", "gzip"), ("Content-Length", "999")],
                gzip(text.as_bytes()),
            )),
        );
        let back = round_trip(&[r], false);
        let response = back[0].response.as_ref().unwrap();
        assert_eq!(
            response.headers.get("content-length"),
            Some(response.body.data.len().to_string().as_str())
        );
        assert_eq!(
            crate::decode::decode("gzip", &response.body.data, 1 << 20).unwrap(),
            text.as_bytes()
        );
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
}
