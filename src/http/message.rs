//! HTTP messages as message hooks see them: [`Request`], [`Response`], [`Headers`],
//! [`Body`], and the [`HttpFlow`] that pairs a request with its response.
//!
//! Header names keep the case and order they arrived in; nothing is reordered or
//! lowercased unless a hook does it. Bodies are [`Body::Full`] when the proxy buffered
//! them for the hooks (see [`HttpHandler::body_limit`](crate::HttpHandler::body_limit))
//! and [`Body::Streaming`] when they flow past without being held.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::core::Target;
use crate::error::Error;

/// An HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
    /// HTTP/2
    Http2,
}

impl Version {
    /// The version as it appears on the wire, e.g. `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in their original order, names in their original case. Lookups ignore
/// case.
///
/// ```
/// let mut h = mitm::Headers::new();
/// h.append("Content-Type", "text/plain");
/// h.append("X-Trace", "a");
/// h.append("x-trace", "b");
/// assert_eq!(h.get("content-type"), Some("text/plain"));
/// assert_eq!(h.get_all("X-TRACE").count(), 2);
/// h.insert("X-Trace", "c");
/// assert_eq!(h.get_all("x-trace").collect::<Vec<_>>(), [&b"c"[..]]);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Bytes, Bytes)>,
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// The same fields in storage of their own: one buffer, copied. Names and values
    /// read from the wire share the connection's read buffer; a copy kept after the
    /// exchange (a capture's record) would otherwise keep that whole buffer alive.
    ///
    /// ```
    /// let mut h = mitm::Headers::new();
    /// h.append("Host", "example.com");
    /// h.append("X-Empty", "");
    /// assert_eq!(h.compact(), h);
    /// ```
    pub fn compact(&self) -> Headers {
        let mut compact = Headers::with_capacity(self.entries.len());
        self.compact_into(&mut compact);
        compact
    }

    /// [`compact`](Self::compact) into `into`, which is replaced: its list, and its
    /// buffer when nothing else holds any of its fields, hold the copy (no allocation
    /// for them when they are large enough). For a record made again in the storage of
    /// one written ([`Record`](crate::capture::Record)s, flow after flow).
    pub(crate) fn compact_into(&self, into: &mut Headers) {
        let size = self.entries.iter().map(|(n, v)| n.len() + v.len()).sum();
        // The fields of `into` share one buffer (when `compact` made them): dropping
        // all but one leaves that one the buffer's only holder, and the buffer can be
        // taken back whole (an empty field holds no buffer).
        let mut held = None;
        for (name, value) in into.entries.drain(..) {
            if !value.is_empty() {
                held = Some(value);
            } else if !name.is_empty() {
                held = Some(name);
            }
        }
        let reused = held
            .and_then(|field| field.try_into_mut().ok())
            .and_then(|mut buffer| {
                buffer.clear();
                // Not one much larger than needed: a record's weight counts its bytes.
                (buffer.try_reclaim(size) && buffer.capacity() <= 2 * size.max(256))
                    .then_some(buffer)
            });
        let mut all = reused.unwrap_or_else(|| bytes::BytesMut::with_capacity(size));
        for (n, v) in &self.entries {
            all.extend_from_slice(n);
            all.extend_from_slice(v);
        }
        let mut all = all.freeze();
        into.entries.extend(self.entries.iter().map(|(n, v)| {
            let name = all.split_to(n.len());
            (name, all.split_to(v.len()))
        }));
    }

    /// How many fields there are (a name that appears twice counts twice).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every field, in order: name (as received) and raw value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or(""), v.as_ref()))
    }

    /// The first value of `name` as text, if present and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get_bytes(name)?).ok()
    }

    /// The first value of `name`, raw.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// The items of every value of `name`, read as comma-separated lists, trimmed, empty
    /// ones skipped: `Connection: keep-alive, Upgrade` gives `keep-alive`, `Upgrade`.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// Whether [`tokens`](Self::tokens) of `name` hold `token` (case-insensitively), as
    /// `Connection: keep-alive, Upgrade` holds `upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Adds a field at the end, keeping any others of the same name.
    pub fn append(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Sets `name` to `value`: the first field of that name takes the value (keeping
    /// its place), the others are removed; appended if there was none.
    pub fn insert(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        let mut value = Some(value.into());
        self.entries.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case(&name) {
                return true;
            }
            match value.take() {
                Some(new) => {
                    *v = new;
                    true
                }
                None => false,
            }
        });
        if let Some(value) = value {
            self.entries.push((name, value));
        }
    }

    /// Removes every field named `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
        before - self.entries.len()
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.entries
            .retain(|(n, v)| keep(std::str::from_utf8(n).unwrap_or(""), v));
    }

    /// Every field, raw name and value.
    pub(crate) fn raw_iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }
}

/// A message body, as hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// No body at all.
    Empty,
    /// The whole body, held in memory. A hook may replace it; the proxy then sends it
    /// with a matching `Content-Length`.
    Full(Bytes),
    /// The body streams from one side to the other without being held (it is larger
    /// than every middleware's [`body_limit`](crate::HttpHandler::body_limit), or no
    /// middleware asked for bodies). Replacing it with `Full` or `Empty` discards the
    /// original.
    Streaming,
}

impl Body {
    /// The bytes, when the body is held in memory (`Empty` is an empty slice).
    pub fn bytes(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::from_static(b"");
        match self {
            Body::Empty => Some(&EMPTY),
            Body::Full(b) => Some(b),
            Body::Streaming => None,
        }
    }
}

/// The pieces of a body read one after another, as one buffer (no copy for one piece).
pub(crate) fn join(pieces: &[Bytes]) -> Bytes {
    match pieces {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut all = bytes::BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for p in many {
                all.extend_from_slice(p);
            }
            all.freeze()
        }
    }
}

/// The body of a message with these headers, decoded by its `Content-Encoding`.
fn decoded(
    headers: &Headers,
    body: &Body,
    limit: usize,
) -> Option<Result<Vec<u8>, crate::decode::DecodeError>> {
    let bytes = body.bytes()?;
    let encoding = headers.get("content-encoding").unwrap_or("identity");
    Some(crate::decode::decode(encoding, bytes, limit))
}

/// An HTTP request on its way to an origin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Where the request goes: host, port, and whether the origin speaks TLS. Change it
    /// to send the request elsewhere.
    pub target: Target,
    /// The origin-form target: path and query, e.g. `/search?q=1`.
    pub path: String,
    /// The version the client spoke.
    pub version: Version,
    /// The header fields, as received (hop-by-hop fields are removed before sending).
    pub headers: Headers,
    /// The body.
    pub body: Body,
}

impl Request {
    /// A request for `url` (`http://host[:port]/path` or `https://…`) with no headers
    /// and no body.
    ///
    /// ```
    /// let r = mitm::Request::new("GET", "https://example.com/a?b=1").unwrap();
    /// assert_eq!(r.target.port, 443);
    /// assert_eq!(r.path, "/a?b=1");
    /// assert_eq!(r.url(), "https://example.com/a?b=1");
    /// ```
    pub fn new(method: &str, url: &str) -> Option<Self> {
        let (target, path) = super::target::split_absolute(url)??;
        Some(Request::new_to(method.to_string(), target, path))
    }

    /// A request to `target` for `path` (origin-form), with no headers and no body.
    pub(crate) fn new_to(method: String, target: Target, path: String) -> Self {
        Request {
            method,
            target,
            path,
            version: Version::Http11,
            headers: Headers::new(),
            body: Body::Empty,
        }
    }

    /// The body decoded by its `Content-Encoding` (gzip, deflate, br, zstd), producing
    /// at most `limit` bytes; `None` when the body streams past (not held in memory).
    pub fn decoded_body(
        &self,
        limit: usize,
    ) -> Option<Result<Vec<u8>, crate::decode::DecodeError>> {
        decoded(&self.headers, &self.body, limit)
    }

    /// Whether this is a `CONNECT`: its target is an authority (`host:port`), not a
    /// resource.
    pub fn is_connect(&self) -> bool {
        self.method.eq_ignore_ascii_case("CONNECT")
    }

    /// The full URL: scheme, host, the port when it is not the scheme's default, path.
    /// A `CONNECT` has no scheme or path: its URL is the authority it asks for, as
    /// mitmproxy writes it.
    ///
    /// ```
    /// let mut r = mitm::Request::new("GET", "https://[::1]:8443/a").unwrap();
    /// assert_eq!(r.url(), "https://[::1]:8443/a");
    /// r.method = "CONNECT".into();
    /// assert_eq!(r.url(), "[::1]:8443");
    /// ```
    pub fn url(&self) -> String {
        if self.is_connect() {
            return self.target.to_string();
        }
        let (scheme, default) = if self.target.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = if self.target.host.contains(':') {
            format!("[{}]", self.target.host)
        } else {
            self.target.host.clone()
        };
        if self.target.port == default {
            format!("{scheme}://{host}{}", self.path)
        } else {
            format!("{scheme}://{host}:{}{}", self.target.port, self.path)
        }
    }
}

/// An HTTP response on its way to the client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The reason phrase, e.g. `OK`.
    pub reason: String,
    /// The version the origin spoke.
    pub version: Version,
    /// The header fields, as received.
    pub headers: Headers,
    /// The body.
    pub body: Body,
}

impl Response {
    /// A response with `status`, its standard reason phrase and no headers or body.
    ///
    /// ```
    /// let r = mitm::Response::new(404).with_body("text/plain", "not here");
    /// assert_eq!(r.reason, "Not Found");
    /// assert_eq!(r.headers.get("content-type"), Some("text/plain"));
    /// ```
    pub fn new(status: u16) -> Self {
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            version: Version::Http11,
            headers: Headers::new(),
            body: Body::Empty,
        }
    }

    /// The body decoded by its `Content-Encoding` (gzip, deflate, br, zstd), producing
    /// at most `limit` bytes; `None` when the body streams past (not held in memory).
    ///
    /// ```
    /// let gz = mitm::decode::encode("gzip", b"hello").unwrap();
    /// let mut r = mitm::Response::new(200).with_body("text/plain", gz);
    /// r.headers.insert("Content-Encoding", "gzip");
    /// assert_eq!(r.decoded_body(1024).unwrap().unwrap(), b"hello");
    /// ```
    pub fn decoded_body(
        &self,
        limit: usize,
    ) -> Option<Result<Vec<u8>, crate::decode::DecodeError>> {
        decoded(&self.headers, &self.body, limit)
    }

    /// Sets the body and its `Content-Type`.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers.insert(
            "Content-Type",
            Bytes::copy_from_slice(content_type.as_bytes()),
        );
        self.body = Body::Full(body.into());
        self
    }
}

/// The standard reason phrase of a status code ("" for unknown ones).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "",
    }
}

/// When the parts of an exchange happened.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Timings {
    /// Wall-clock time the request head was complete.
    pub started_at: SystemTime,
    /// The same moment, on the monotonic clock the other fields use.
    pub start: Instant,
    /// The request (with its body) was sent on.
    pub request_end: Option<Instant>,
    /// The first byte of the response head arrived.
    pub response_first_byte: Option<Instant>,
    /// The response (with its body) was passed to the client.
    pub response_end: Option<Instant>,
}

impl Timings {
    pub(crate) fn now() -> Self {
        Timings {
            started_at: SystemTime::now(),
            start: Instant::now(),
            request_end: None,
            response_first_byte: None,
            response_end: None,
        }
    }

    /// Time from the request to the first byte of the response.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        Some(self.response_first_byte?.duration_since(self.start))
    }

    /// Time from the request to the end of the response.
    pub fn total(&self) -> Option<Duration> {
        Some(self.response_end?.duration_since(self.start))
    }
}

/// One request and (once it has arrived) its response, with when and how much.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpFlow {
    /// A number unique among the flows of one connection, from 1.
    pub id: u64,
    /// The request.
    pub request: Request,
    /// The response, once there is one (in the response hook, and after).
    pub response: Option<Response>,
    /// When things happened.
    pub timings: Timings,
    /// Body bytes of the request sent on so far (all of them once finished).
    pub request_body_size: u64,
    /// Body bytes of the response passed on so far (all of them once finished).
    pub response_body_size: u64,
    /// The first bytes of a request body that streamed past
    /// ([`Body::Streaming`]), as sent to the origin, up to the largest
    /// [`streamed_body_prefix`](crate::HttpHandler::streamed_body_prefix) of the
    /// middlewares: complete in [`flow_finished`](crate::HttpHandler::flow_finished),
    /// empty before, and for bodies held whole (those are in `request.body`).
    pub request_body_prefix: Bytes,
    /// As [`request_body_prefix`](Self::request_body_prefix), for the response body
    /// as passed to the client.
    pub response_body_prefix: Bytes,
    /// What went wrong, when the exchange failed: set before the `response` hook sees
    /// the error page the proxy made (so a proxy-made `502` can be told from an
    /// origin's), or before `flow_finished` when the exchange broke off midway (a
    /// client or origin gone, a timeout). `None` for an exchange that went through,
    /// and for answers a request hook gave.
    pub error: Option<Arc<Error>>,
    /// Whether `response` is the error page the proxy made because the request could
    /// not be delivered (the origin unreachable, silent, or broken): such a flow is
    /// kept as its error with no response, as mitmproxy keeps it.
    pub(crate) undelivered: bool,
    /// Whether this flow is a replay, as mitmproxy's `is_replay` says: a request sent
    /// again ([`Sender::replay`](crate::Sender::replay) marks its flows so), or a
    /// response given from a recording (a server replay marks the flows it answers).
    /// Captures keep it (`~replay` finds it).
    pub is_replay: Option<Replay>,
    /// The flow's mark, as mitmproxy keeps it (`marked`: the name of an emoji such as
    /// `:default:`, or any text); empty when not marked. Hooks may set it (an addon
    /// script's `flow.marked`); captures keep it (`~marked`) and the web UI shows it.
    pub marked: String,
    /// A comment on the flow (mitmproxy's `comment`); empty for none. Kept and shown as
    /// [`marked`](Self::marked) is.
    pub comment: String,
    /// A hook asks for the flow to be held for the user (mitmproxy's
    /// `flow.intercept()`): a web UI's feed pauses it where it is (before the request
    /// goes upstream, or before the response goes back), as its intercept filter
    /// would, until the user resumes or kills it, then clears this. Without a web UI
    /// nothing holds the flow.
    pub intercept: bool,
}

/// What a replayed flow replayed ([`HttpFlow::is_replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// The request was sent again (a client replay).
    Request,
    /// The response came from a recording (a server replay).
    Response,
}

impl Replay {
    /// As mitmproxy writes it: `request` or `response`.
    pub fn as_str(self) -> &'static str {
        match self {
            Replay::Request => "request",
            Replay::Response => "response",
        }
    }
}

impl HttpFlow {
    /// A flow for `request`, timed from now.
    pub(crate) fn new(id: u64, request: Request) -> Self {
        HttpFlow {
            id,
            request,
            response: None,
            timings: Timings::now(),
            request_body_size: 0,
            response_body_size: 0,
            request_body_prefix: Bytes::new(),
            response_body_prefix: Bytes::new(),
            error: None,
            undelivered: false,
            is_replay: None,
            marked: String::new(),
            comment: String::new(),
            intercept: false,
        }
    }

    /// Whether the request could not be delivered: the flow's response (if any) is the
    /// error page the proxy made for its [`error`](Self::error), not an answer from an
    /// origin, a hook, or a refusal of the proxy's.
    pub fn undelivered(&self) -> bool {
        self.undelivered
    }
}

/// What a message hook decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// Go on (with the flow as the hook left it).
    Continue,
    /// Answer the client with this response. From a request hook, no origin is
    /// contacted; from a response hook, it replaces the origin's response.
    Respond(Response),
    /// Close the client connection at once, without an answer.
    Kill,
}
