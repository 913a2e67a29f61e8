//! [`FlowDetail`]: mitmdump's per-flow output (`--flow-detail 0..4`), built on
//! `flow_finished`.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::HttpHandler;
use crate::core::Connection;
use crate::http::message::{Body, Headers, HttpFlow, Replay};

/// How much [`FlowDetail`] writes of each flow: mitmdump's `flow_detail` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Detail {
    /// 0: nothing.
    Quiet,
    /// 1: the request line (the URL shortened) and the response's status line.
    Line,
    /// 2: the URL whole, and both heads' fields.
    Headers,
    /// 3: and the bodies, cut after [`Detail::BODY_LINES`] lines.
    Bodies,
    /// 4: and the bodies whole (as far as [`Detail::FULL_BODY`] bytes).
    Full,
}

impl Detail {
    /// Lines of a body shown at [`Detail::Bodies`] (mitmproxy's
    /// `content_view_lines_cutoff`).
    pub const BODY_LINES: usize = 512;
    /// Bytes of a body kept to show at [`Detail::Bodies`].
    pub const BODY_BYTES: usize = 64 * 1024;
    /// Bytes of a body kept to show at [`Detail::Full`]; a longer body is cut there,
    /// saying so.
    pub const FULL_BODY: usize = 1024 * 1024;

    /// The level as mitmdump numbers it (0 to 4); `None` beyond.
    pub fn from_level(level: u8) -> Option<Detail> {
        Some(match level {
            0 => Detail::Quiet,
            1 => Detail::Line,
            2 => Detail::Headers,
            3 => Detail::Bodies,
            4 => Detail::Full,
            _ => return None,
        })
    }
}

/// Writes each finished HTTP flow as mitmdump does at its `--flow-detail` level, to
/// stdout or any writer: the client's address (or `[replay]`), method, URL and, when
/// the two sides' versions differ or are not HTTP/1, the version; then ` << ` with the
/// status, reason and body size; headers and bodies at higher levels; an error as
/// ` << ERROR`. `CONNECT` flows are not written (the requests inside the tunnel are).
///
/// ```text
/// 127.0.0.1:50528: GET http://example.com/
///               << 200 OK 1.2k
/// ```
///
/// Bodies are never held back for it: it reads the first bytes the proxy copies as a
/// body streams ([`HttpHandler::streamed_body_prefix`]), decoded by their
/// `Content-Encoding` when whole.
#[derive(Clone)]
pub struct FlowDetail {
    detail: Detail,
    max_url: usize,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for FlowDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowDetail")
            .field("detail", &self.detail)
            .field("max_url", &self.max_url)
            .finish_non_exhaustive()
    }
}

impl FlowDetail {
    /// Writes flows at `detail` to stdout.
    pub fn new(detail: Detail) -> Self {
        FlowDetail {
            detail,
            max_url: 55,
            out: Arc::new(Mutex::new(Box::new(std::io::stdout()))),
        }
    }

    /// Writes to `out` instead of stdout (each flow written whole, then flushed).
    pub fn writer(mut self, out: impl Write + Send + 'static) -> Self {
        self.out = Arc::new(Mutex::new(Box::new(out)));
        self
    }

    /// At [`Detail::Line`], URLs longer than `chars` are cut there (with `…`).
    /// Default: 55, what mitmdump cuts at when its output is not a terminal (its
    /// terminal's width less 25 otherwise).
    pub fn max_url(mut self, chars: usize) -> Self {
        self.max_url = chars;
        self
    }

    /// The level.
    pub fn detail(&self) -> Detail {
        self.detail
    }

    /// What is written for `flow` of `conn` (empty at [`Detail::Quiet`] and for a
    /// `CONNECT`), each line ending in `\n`.
    pub fn render(&self, conn: &Connection, flow: &HttpFlow) -> String {
        let mut out = String::new();
        if self.detail == Detail::Quiet || flow.request.is_connect() {
            return out;
        }
        let req = &flow.request;
        let response = flow.response.as_ref().filter(|_| !flow.undelivered);
        let client = match (flow.is_replay, conn.client.addr) {
            (Some(Replay::Request), _) => "[replay]".to_string(),
            (_, Some(addr)) => addr.to_string(),
            (_, None) => String::new(),
        };
        let mut url = req.url();
        if self.detail == Detail::Line && url.chars().count() > self.max_url {
            url = url.chars().take(self.max_url).collect::<String>() + "…";
        }
        let h1 = |v: crate::http::message::Version| v != crate::http::message::Version::Http2;
        let response_version =
            response.map_or(crate::http::message::Version::Http11, |r| r.version);
        let request_version = if !h1(req.version) || req.version != response_version {
            format!(" {}", version_name(req.version))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{client}: {} {}{request_version}",
            escape(&req.method),
            escape(&url)
        );
        if self.detail >= Detail::Headers {
            headers(&mut out, &req.headers);
        }
        if self.detail >= Detail::Bodies {
            let body = body_bytes(&req.body, &flow.request_body_prefix);
            match req.path.split_once('?') {
                // As mitmproxy's view shows a request with no body: its query.
                Some((_, query)) if flow.request_body_size == 0 && !query.is_empty() => {
                    out.push('\n');
                    pairs(&mut out, query);
                    out.push('\n');
                }
                _ => self.body(&mut out, &req.headers, body, flow.request_body_size),
            }
        }
        if let Some(res) = response {
            let replay = if flow.is_replay == Some(Replay::Response) {
                "[replay]"
            } else {
                ""
            };
            let version = if !h1(res.version) || req.version != res.version {
                format!("{} ", version_name(res.version))
            } else {
                String::new()
            };
            let mut arrows = " <<".to_string();
            if self.detail == Detail::Line {
                // The status under the method.
                let pad = client
                    .chars()
                    .count()
                    .saturating_sub(2 + version.len() + replay.len());
                arrows = " ".repeat(pad) + &arrows;
            }
            let reason = if res.reason.is_empty() {
                http::StatusCode::from_u16(res.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("")
                    .to_string()
            } else {
                escape(&res.reason)
            };
            let _ = writeln!(
                out,
                "{replay}{arrows} {version}{} {reason} {}",
                res.status,
                pretty_size(flow.response_body_size)
            );
            if self.detail >= Detail::Headers {
                headers(&mut out, &res.headers);
            }
            if self.detail >= Detail::Bodies {
                let body = body_bytes(&res.body, &flow.response_body_prefix);
                self.body(&mut out, &res.headers, body, flow.response_body_size);
            }
        }
        if let Some(error) = &flow.error {
            let _ = writeln!(
                out,
                " << {}",
                escape(&crate::error::Report(&**error).to_string())
            );
        }
        out
    }

    /// A body, as mitmdump shows it: a blank line, its lines indented, a blank line;
    /// text as it is (decoded), anything else by its size.
    fn body(&self, out: &mut String, headers: &Headers, bytes: Option<&Bytes>, size: u64) {
        let limit = if self.detail == Detail::Full {
            Detail::FULL_BODY
        } else {
            Detail::BODY_BYTES
        };
        let mut text = String::new();
        let mut cut = false;
        if let Some(bytes) = bytes.filter(|b| !b.is_empty()) {
            let whole = bytes.len() as u64 >= size;
            let encoding = headers.get("content-encoding").unwrap_or("identity");
            let decoded = if whole {
                crate::decode::decode(encoding, bytes, limit).ok()
            } else if encoding.eq_ignore_ascii_case("identity") {
                Some(bytes.to_vec())
            } else {
                None
            };
            cut = !whole;
            let form = headers
                .get("content-type")
                .is_some_and(|t| t.trim().starts_with("application/x-www-form-urlencoded"));
            match decoded.as_deref().map(std::str::from_utf8) {
                Some(Ok(body)) if form && !cut => pairs(&mut text, body),
                Some(Ok(body)) => {
                    let lines = body.lines();
                    let shown: Vec<&str> = if self.detail == Detail::Full {
                        lines.collect()
                    } else {
                        let mut lines = lines;
                        let shown: Vec<&str> = lines.by_ref().take(Detail::BODY_LINES).collect();
                        cut |= lines.next().is_some();
                        shown
                    };
                    for line in shown {
                        let _ = writeln!(text, "    {}", escape(line));
                    }
                }
                _ => {
                    let _ = writeln!(text, "    ({} bytes, not text)", size);
                    cut = false;
                }
            }
        } else if size > 0 {
            let _ = writeln!(text, "    ({size} bytes, not kept)");
        }
        if !text.is_empty() {
            out.push('\n');
            out.push_str(&text);
        }
        if cut {
            out.push_str("    (cut off)\n");
        }
        out.push('\n');
    }
}

/// The bytes of a body to show: held whole, else the prefix copied as it streamed.
fn body_bytes<'a>(body: &'a Body, prefix: &'a Bytes) -> Option<&'a Bytes> {
    match body {
        Body::Full(bytes) => Some(bytes),
        Body::Empty => None,
        _ => Some(prefix),
    }
}

/// A query or a form's `name=value&…`, indented, one `name: value` a line,
/// percent-decoded (`+` a space), as mitmproxy's views show them.
fn pairs(out: &mut String, text: &str) {
    let text = text.split('#').next().unwrap_or_default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let _ = writeln!(
            out,
            "    {}: {}",
            escape(&percent_decode(name)),
            escape(&percent_decode(value))
        );
    }
}

/// `text` percent-decoded, `+` as a space; a `%` not followed by two hex digits
/// stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xff.
                out.push((high * 16 + low) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Header fields, indented, one a line.
fn headers(out: &mut String, headers: &Headers) {
    for (name, value) in headers.iter() {
        let _ = writeln!(
            out,
            "    {}: {}",
            escape(name),
            escape(&String::from_utf8_lossy(value))
        );
    }
}

/// The version as mitmproxy writes it (`HTTP/2.0`).
fn version_name(version: crate::http::message::Version) -> &'static str {
    match version {
        crate::http::message::Version::Http2 => "HTTP/2.0",
        other => other.as_str(),
    }
}

/// `text` with control characters but tabs escaped, so that a flow cannot write to the
/// terminal.
fn escape(text: &str) -> String {
    let control = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if control(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A size as mitmproxy writes it: `351b`, `1.2k`, `310k`, `4.0m`.
pub(crate) fn pretty_size(size: u64) -> String {
    if size < 1024 {
        return format!("{size}b");
    }
    let mut value = size as f64;
    for suffix in ["k", "m", "g", "t"] {
        value /= 1024.0;
        if value < 99.95 {
            return format!("{value:.1}{suffix}");
        }
        if value < 1024.0 || suffix == "t" {
            return format!("{value:.0}{suffix}");
        }
    }
    unreachable!("the loop returns at its last suffix")
}

#[async_trait]
impl HttpHandler for FlowDetail {
    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let text = self.render(conn, flow);
        if text.is_empty() {
            return;
        }
        // A poisoned lock only means another flow's write panicked: the writer is fine.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "cannot write the flow detail");
        }
    }

    fn streamed_body_prefix(&self) -> usize {
        match self.detail {
            Detail::Quiet | Detail::Line | Detail::Headers => 0,
            Detail::Bodies => Detail::BODY_BYTES,
            Detail::Full => Detail::FULL_BODY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_as_mitmproxy_writes_them() {
        assert_eq!(pretty_size(0), "0b");
        assert_eq!(pretty_size(351), "351b");
        assert_eq!(pretty_size(1023), "1023b");
        assert_eq!(pretty_size(1024), "1.0k");
        assert_eq!(pretty_size(1300), "1.3k");
        assert_eq!(pretty_size(310 * 1024), "310k");
        assert_eq!(pretty_size(4 * 1024 * 1024), "4.0m");
    }

    #[test]
    fn queries_and_forms_are_shown_as_pairs() {
        let mut out = String::new();
        pairs(&mut out, "a=1&b=x+y%21&c&=e&&d=%zz#frag");
        assert_eq!(out, "    a: 1\n    b: x y!\n    c: \n    : e\n    d: %zz\n");
        let mut f = flow("http://example.com/s?q=a%20b");
        f.response = None;
        let text = FlowDetail::new(Detail::Bodies).render(&conn(), &f);
        assert!(
            text.ends_with("    Host: example.com\n\n    q: a b\n\n"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_but_tabs_are_escaped() {
        assert_eq!(escape("a\tb"), "a\tb");
        assert_eq!(escape("x\u{1b}[2Jy\r"), "x\\u{1b}[2Jy\\r");
    }

    #[test]
    fn levels_are_mitmdumps_numbers() {
        assert_eq!(Detail::from_level(0), Some(Detail::Quiet));
        assert_eq!(Detail::from_level(4), Some(Detail::Full));
        assert_eq!(Detail::from_level(5), None);
        assert!(Detail::Bodies > Detail::Headers);
    }

    fn flow(url: &str) -> HttpFlow {
        let mut request = crate::Request::new("GET", url).unwrap();
        request.headers.append("Host", "example.com");
        let mut flow = HttpFlow::new(1, request);
        let mut response = crate::Response::new(200);
        response.reason = "OK".into();
        response.headers.append("Content-Type", "text/plain");
        response.body = Body::Full(Bytes::from_static(b"hello\nworld\n"));
        flow.response = Some(response);
        flow.response_body_size = 12;
        flow
    }

    fn conn() -> Connection {
        Connection::new(
            1,
            crate::core::Host::new("127.0.0.1:50528".parse().unwrap()),
        )
    }

    #[test]
    fn line_level_writes_the_request_and_the_status_under_the_method() {
        let text = FlowDetail::new(Detail::Line).render(&conn(), &flow("http://example.com/a"));
        assert_eq!(
            text,
            "127.0.0.1:50528: GET http://example.com/a\n              << 200 OK 12b\n"
        );
        let long = format!("http://example.com/{}", "x".repeat(100));
        let text = FlowDetail::new(Detail::Line).render(&conn(), &flow(&long));
        assert!(text.lines().next().unwrap().ends_with("xx…"), "{text}");
        let text = FlowDetail::new(Detail::Quiet).render(&conn(), &flow("http://example.com/"));
        assert_eq!(text, "");
    }

    #[test]
    fn higher_levels_add_headers_then_bodies() {
        let f = flow("http://example.com/a");
        let text = FlowDetail::new(Detail::Headers).render(&conn(), &f);
        assert_eq!(
            text,
            "127.0.0.1:50528: GET http://example.com/a\n    Host: example.com\n \
             << 200 OK 12b\n    Content-Type: text/plain\n"
        );
        let text = FlowDetail::new(Detail::Bodies).render(&conn(), &f);
        assert!(
            text.ends_with(
                " << 200 OK 12b\n    Content-Type: text/plain\n\n    hello\n    world\n\n"
            ),
            "{text}"
        );
    }
}
