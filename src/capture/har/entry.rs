//! A record as a HAR entry: its request and response with their headers, cookies,
//! query and bodies (decoded, as text or base64), its timings, and this crate's extra
//! fields.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::capture::{Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse};
use crate::http::message::Headers;

/// The most bytes a body is decoded to for a HAR entry; one that decodes to more is
/// kept as sent (`"_contentEncoded": true`).
pub const DECODED_LIMIT: usize = 64 * 1024 * 1024;

/// The HAR entry of `record`.
pub(crate) fn entry(record: &Record) -> Value {
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
    let mut timings = json!({
        "blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
        "send": send, "wait": wait, "receive": receive,
    });
    if !unknown.is_empty() {
        timings["_unknown"] = unknown.into();
    }
    e.insert("timings".into(), timings);
    if let Some(server) = record.server {
        e.insert("serverIPAddress".into(), server.ip().to_string().into());
        e.insert("_serverPort".into(), server.port().into());
    }
    if let Some(client) = record.client {
        e.insert("_clientAddress".into(), client.to_string().into());
    }
    e.insert("_clientTls".into(), record.client_tls.into());
    if !record.tls.is_empty() {
        e.insert("_tls".into(), super::facts::tls_json(&record.tls));
    }
    if let Some(messages) = &record.websocket {
        e.insert("_resourceType".into(), "websocket".into());
        e.insert("_webSocketMessages".into(), websocket_messages(messages));
    }
    // mitmproxy's comment is HAR's own; its mark and replay are ours.
    let notes = &record.annotations;
    if !notes.comment.is_empty() {
        e.insert("comment".into(), notes.comment.clone().into());
    }
    if !notes.marked.is_empty() {
        e.insert("_marked".into(), notes.marked.clone().into());
    }
    if let Some(replay) = &notes.is_replay {
        e.insert("_isReplay".into(), replay.clone().into());
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

/// The request of an entry; a WebSocket's URL is `ws://` or `wss://`, as browsers
/// write it.
fn request(r: &RecordedRequest, websocket: bool) -> Value {
    let mut url = r.url();
    if websocket {
        url.replace_range(..4, "ws");
    }
    // The path as browsers write it in a URL: bytes a URL cannot hold as they are
    // (non-ASCII, spaces, controls) percent-encoded; the path as sent kept beside it
    // when that changed it.
    let encoded = percent_encode_path(&r.path);
    let raw_path = (encoded != r.path).then(|| r.path.clone());
    if raw_path.is_some() {
        url.truncate(url.len() - r.path.len());
        url.push_str(&encoded);
    }
    let mut v = json!({
        "method": r.method,
        "url": url,
        "httpVersion": r.version,
        "cookies": request_cookies(&r.headers),
        "headers": headers(&r.headers),
        "queryString": query_string(&encoded),
        "headersSize": request_head_size(r),
        "bodySize": r.body.size,
    });
    if let Some(raw) = raw_path {
        v["_path"] = raw.into();
    }
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
        "headersSize": response_head_size(r),
        "bodySize": r.body.size,
    })
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
pub(super) fn rfc3339(t: SystemTime) -> String {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::capture::har::tests::{gzip, record};
    use crate::capture::RecordedTimings;

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
