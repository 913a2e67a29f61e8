//! [`Record`]: one finished flow as plain data (heads, bodies kept up to a limit,
//! timings, addresses, error, WebSocket messages), what every capture format writes and
//! reads; made from a flow with [`Record::from_flow`], or made early and brought up to
//! date as the flow finishes ([`Record::finish`]).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::core::{Connection, ServerFacts, SocketFacts, TlsFacts};
use crate::http::message::{Body, Headers, HttpFlow, Request, Response, Version};
use crate::http::websocket::WebSocketClose;

/// One finished flow, as plain data: what a capture file holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// When the request head was complete.
    pub started_at: SystemTime,
    /// The client's address, when known.
    pub client: Option<SocketAddr>,
    /// The address of the server that answered, when one did.
    pub server: Option<SocketAddr>,
    /// Whether the client spoke TLS with the proxy.
    pub client_tls: bool,
    /// What the client's TLS with the proxy settled (SNI, ALPN, version), as far as
    /// known; empty without TLS.
    pub tls: TlsFacts,
    /// The request as it went to the origin (after the hooks).
    pub request: RecordedRequest,
    /// The response as it went to the client, if there was one.
    pub response: Option<RecordedResponse>,
    /// Time from the start to each later point, when it was reached.
    pub timings: RecordedTimings,
    /// What mitmproxy keeps of a flow beside its messages (a mark, a comment, whether
    /// it was replayed), as read from a flow file; empty for flows captured here but
    /// for those a client replay sent ([`CaptureBuilder::annotations`](super::CaptureBuilder::annotations)).
    pub annotations: Annotations,
    /// What went wrong, when the flow failed.
    pub error: Option<String>,
    /// The messages of a WebSocket flow (a `101` to a WebSocket upgrade), in order;
    /// `None` for other flows.
    pub websocket: Option<Vec<RecordedMessage>>,
    /// The connection facts mitmproxy keeps beside the peers' addresses: both sides'
    /// times and local addresses, the upstream's TLS (with its certificates), and how a
    /// WebSocket flow was closed.
    pub facts: RecordedFacts,
}

/// What a record knows of its connections beyond the peers' addresses and the client's
/// TLS ([`Record::tls`]), and of a WebSocket's end: every field of mitmproxy's flow
/// format that the proxy can know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedFacts {
    /// The client connection: when it was accepted, the proxy's address it reached,
    /// when its TLS handshake finished.
    pub client: SocketFacts,
    /// The upstream connection the flow went over: its times, the proxy's address on
    /// it, what its TLS settled and the server's certificate chain.
    pub server: ServerFacts,
    /// How the WebSocket was closed (a WebSocket flow whose end the capture saw).
    pub websocket_close: Option<WebSocketClose>,
}

/// What mitmproxy keeps of a flow beside its messages, under the same names in its
/// flow files: the mark and comment a user gave it, and whether it was replayed. All
/// empty by default; the filters `~marked`, `~marker`, `~comment` and `~replay` look
/// at them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Annotations {
    /// The flow's mark (mitmproxy's `marked`: the name of an emoji such as `:default:`,
    /// or any text); empty when the flow is not marked.
    pub marked: String,
    /// The user's comment; empty for none.
    pub comment: String,
    /// mitmproxy's `is_replay`: `request` for a request a client replay sent again,
    /// `response` for a response a server replay gave; `None` for a flow not replayed.
    pub is_replay: Option<String>,
}

/// A WebSocket message, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedMessage {
    /// Sent by the client (else by the server).
    pub from_client: bool,
    /// A text message (else binary).
    pub text: bool,
    /// The payload, as the capture's hook saw it (middlewares before it may have changed
    /// it), cut to the capture's body limit.
    pub data: Bytes,
    /// When the proxy passed it on.
    pub at: SystemTime,
}

/// A request, as recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The origin's host (a name, or an IP address without brackets).
    pub host: String,
    /// The origin's port.
    pub port: u16,
    /// Path and query, e.g. `/search?q=1`.
    pub path: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, names as sent.
    pub headers: Headers,
    /// The body.
    pub body: RecordedBody,
}

impl RecordedRequest {
    /// Whether this is a `CONNECT`: its target is the authority `host:port`, and it
    /// has no scheme or path.
    pub fn is_connect(&self) -> bool {
        self.method.eq_ignore_ascii_case("CONNECT")
    }

    /// The URL: `scheme://host[:port]path`, the port only when not the scheme's
    /// default; for a `CONNECT`, the authority it asked for (`host:port`), as mitmproxy
    /// writes it.
    pub fn url(&self) -> String {
        if self.is_connect() {
            return self.authority();
        }
        let default = if self.scheme == "https" { 443 } else { 80 };
        // Made in one string, without the formatting machinery (the HAR writer makes
        // one per flow).
        let mut url =
            String::with_capacity(self.scheme.len() + 3 + self.host.len() + 8 + self.path.len());
        url.push_str(&self.scheme);
        url.push_str("://");
        self.push_host(&mut url);
        if self.port != default {
            url.push(':');
            push_port(&mut url, self.port);
        }
        url.push_str(&self.path);
        url
    }
}

impl RecordedRequest {
    /// `host:port`, the host bracketed when it is an IPv6 address.
    pub fn authority(&self) -> String {
        let mut authority = String::with_capacity(self.host.len() + 8);
        self.push_host(&mut authority);
        authority.push(':');
        push_port(&mut authority, self.port);
        authority
    }

    /// The host as a URL holds it: bracketed when it is an IPv6 address.
    fn push_host(&self, out: &mut String) {
        if self.host.contains(':') {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&self.host);
        }
    }

    /// The request to send again: its method, target, path, header fields and body
    /// (as much of it as was kept).
    pub fn to_request(&self) -> Request {
        let target = crate::core::Target::new(self.host.clone(), self.port, self.scheme == "https");
        let mut request = Request::new_to(self.method.clone(), target, self.path.clone());
        request.headers = self.headers.clone();
        if !self.body.data.is_empty() {
            request.body = Body::Full(self.body.data.clone());
        }
        request
    }
}

/// A response, as recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase (empty for HTTP/2).
    pub reason: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, names as sent.
    pub headers: Headers,
    /// The body.
    pub body: RecordedBody,
}

/// A body, as recorded: the bytes kept (up to the capture's body limit), and how many
/// there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedBody {
    /// The bytes kept, as they went over the wire (still content-encoded).
    pub data: Bytes,
    /// How many bytes the body had on the wire.
    pub size: u64,
    /// Whether `data` holds less than the whole body (it streamed past the proxy, or
    /// was larger than the limit).
    pub truncated: bool,
}

impl RecordedBody {
    /// A whole body.
    pub fn whole(data: Bytes) -> Self {
        RecordedBody {
            size: data.len() as u64,
            data,
            truncated: false,
        }
    }
}

/// When things happened, as offsets from the start of the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedTimings {
    /// The request (with its body) was sent on.
    pub request_end: Option<Duration>,
    /// The first byte of the response arrived.
    pub response_first_byte: Option<Duration>,
    /// The response (with its body) was passed to the client.
    pub response_end: Option<Duration>,
}

impl RecordedTimings {
    /// `flow`'s timings so far, as offsets from its start.
    pub(crate) fn of(flow: &HttpFlow) -> Self {
        let since = |t: Option<std::time::Instant>| {
            t.map(|t| t.saturating_duration_since(flow.timings.start))
        };
        RecordedTimings {
            request_end: since(flow.timings.request_end),
            response_first_byte: since(flow.timings.response_first_byte),
            response_end: since(flow.timings.response_end),
        }
    }
}

impl Record {
    /// Roughly how many bytes this record holds: its bodies, heads and messages.
    pub(crate) fn weight(&self) -> usize {
        let head = |h: &Headers| h.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
        let response = self
            .response
            .as_ref()
            .map_or(0, |r| r.body.data.len() + head(&r.headers));
        let messages = self
            .websocket
            .as_ref()
            .map_or(0, |m| m.iter().map(|m| m.data.len() + 48).sum());
        // The server's certificates: shared with its connection while it lasts, but a
        // queued record may be what keeps them.
        let certificates: usize = self
            .facts
            .server
            .tls
            .certificates
            .iter()
            .map(|c| c.len())
            .sum();
        256 + self.request.body.data.len()
            + head(&self.request.headers)
            + response
            + messages
            + certificates
    }

    /// The record of `flow`, finished on `conn`, keeping at most `body_limit` bytes of
    /// each body.
    pub fn from_flow(conn: &Connection, flow: &HttpFlow, body_limit: usize) -> Self {
        let mut record = Self::head_of(conn, flow);
        // The bodies, the response, the timings and the error: as for a record made
        // before the flow finished.
        record.finish(flow, Ending::made(flow, body_limit, &mut Spare::default()));
        record
    }

    /// Makes this record (one written, given back to be dropped) the record of `flow`,
    /// as [`from_flow`](Self::from_flow) makes it: its bodies' buffers, when nothing
    /// else holds them, take the bodies of `flow` (no allocation, and no free, for
    /// them: the large ones, a kilobyte and more, cost glibc the most).
    ///
    /// The rest is made in place too: the strings, the heads' lists and buffers (see
    /// [`Headers::compact_into`]) and the TLS facts keep their storage when it is
    /// large enough, so that a record made again allocates nothing for a flow like the
    /// one before (a dozen allocations, and as many frees, on the proxy's threads).
    pub(crate) fn remake(&mut self, conn: &Connection, flow: &HttpFlow, body_limit: usize) {
        let mut spare = Spare::default();
        spare.take(&mut self.request.body.data);
        if let Some(response) = self.response.as_mut() {
            spare.take(&mut response.body.data);
        }
        let end = Ending::made(flow, body_limit, &mut spare);
        // Every field, named: one added to `Record` must be made here too.
        let Record {
            started_at,
            client,
            server,
            client_tls,
            tls,
            request,
            response,
            timings,
            annotations,
            error,
            websocket,
            facts,
        } = self;
        *started_at = flow.timings.started_at;
        *client = conn.client.addr;
        *server = conn.server.addr;
        *client_tls = conn.tls;
        tls.clone_from(&conn.tls_facts);
        request.assign(&flow.request);
        // The response's head in the old one's (`finish` makes one when there was
        // none, and drops it when the flow's did not come from the origin).
        match (flow.response.as_ref(), response.as_mut()) {
            (Some(r), Some(kept)) => kept.assign(r),
            (None, _) => *response = None,
            (Some(_), None) => {}
        }
        *timings = RecordedTimings::of(flow);
        match (flow.is_replay, annotations.is_replay.as_mut()) {
            (Some(replay), Some(kept)) => assign(kept, replay.as_str()),
            (replay, _) => annotations.is_replay = replay.map(|r| r.as_str().to_owned()),
        }
        // `finish` brings the mark and the comment.
        *error = None;
        *websocket = None;
        facts.client = conn.client_socket;
        match conn.server_facts.as_deref() {
            Some(server) => facts.server.clone_from(server),
            None => facts.server = ServerFacts::default(),
        }
        facts.websocket_close = None;
        self.finish(flow, end);
    }

    /// The record of `flow`'s request head as it stands (its timings so far, its
    /// marks): no bodies, no response, no error. What a record made as the request
    /// goes upstream holds, before [`finish`](Self::finish) brings the rest.
    pub(crate) fn head_of(conn: &Connection, flow: &HttpFlow) -> Self {
        Record {
            started_at: flow.timings.started_at,
            client: conn.client.addr,
            server: conn.server.addr,
            client_tls: conn.tls,
            tls: conn.tls_facts.clone(),
            request: recorded_request(&flow.request, RecordedBody::default()),
            response: None,
            timings: RecordedTimings::of(flow),
            annotations: Annotations {
                is_replay: flow.is_replay.map(|r| r.as_str().to_owned()),
                marked: flow.marked.clone(),
                comment: flow.comment.clone(),
            },
            error: None,
            websocket: None,
            facts: RecordedFacts {
                client: conn.client_socket,
                server: conn.server_facts.as_deref().cloned().unwrap_or_default(),
                websocket_close: None,
            },
        }
    }

    /// Brings this record of `flow`, made before it finished (its request head, and
    /// maybe its response head), up to date with the flow as it finished, `end`: the
    /// bodies, the response (its head made only if the record has none), the timings,
    /// the error. What the record has of the heads stays: cheaper than
    /// [`from_flow`](Self::from_flow) again, for a record kept while the flow goes.
    pub(crate) fn finish(&mut self, flow: &HttpFlow, end: Ending) {
        // A hook may have marked the flow since the record was made.
        if differs(&self.annotations.marked, &flow.marked) {
            self.annotations.marked.clone_from(&flow.marked);
        }
        if differs(&self.annotations.comment, &flow.comment) {
            self.annotations.comment.clone_from(&flow.comment);
        }
        self.request.body = end.request_body;
        self.response = match (flow.response.as_ref(), end.response_body) {
            (Some(r), Some(body)) => Some(match self.response.take() {
                Some(mut kept) => {
                    kept.body = body;
                    kept
                }
                None => recorded_response(r, body),
            }),
            _ => None,
        };
        self.timings = end.timings;
        self.error = end.error;
        if end.websocket {
            self.websocket.get_or_insert_with(Vec::new);
        }
    }
}

/// Whether two annotations differ, without a call to `memcmp` when both are empty (as
/// nearly every flow's are): glibc's vector `memcmp`, given two empty strings, still
/// issues a masked load at their dangling pointer, which cost the web UI's feed a tenth
/// of its time per flow (`web::feed::tests::feed_speed`).
pub(crate) fn differs(kept: &str, now: &str) -> bool {
    !(kept.is_empty() && now.is_empty()) && kept != now
}

/// What a finished flow adds to a record made before ([`Record::finish`]): made
/// apart, so that the bodies are copied before the record is taken to be changed.
pub(crate) struct Ending {
    request_body: RecordedBody,
    response_body: Option<RecordedBody>,
    timings: RecordedTimings,
    error: Option<String>,
    websocket: bool,
}

impl Ending {
    /// What `flow`, finished, adds to its record, keeping at most `body_limit` bytes of
    /// each body. (The web UI's feed finishes the records it made at the request; a
    /// capture makes its records whole, in buffers of its own.)
    #[cfg(feature = "web")]
    pub(crate) fn of(flow: &HttpFlow, body_limit: usize) -> Self {
        Self::made(flow, body_limit, &mut Spare::default())
    }

    /// [`of`](Self::of), the bodies copied into `spare` buffers where they fit.
    fn made(flow: &HttpFlow, body_limit: usize, spare: &mut Spare) -> Self {
        Ending {
            request_body: recorded_body(
                &flow.request.body,
                &flow.request_body_prefix,
                flow.request_body_size,
                body_limit,
                spare,
            ),
            // A request that could not be delivered has its error and no response
            // (the page the proxy made for it is not the origin's answer).
            response_body: flow
                .response
                .as_ref()
                .filter(|_| !flow.undelivered)
                .map(|r| {
                    recorded_body(
                        &r.body,
                        &flow.response_body_prefix,
                        flow.response_body_size,
                        body_limit,
                        spare,
                    )
                }),
            timings: RecordedTimings::of(flow),
            error: error_text(flow),
            websocket: is_websocket(flow),
        }
    }
}

/// `flow`'s error as a record keeps it: the error and its causes, as text.
pub(crate) fn error_text(flow: &HttpFlow) -> Option<String> {
    flow.error
        .as_ref()
        .map(|e| crate::error::Report(e).to_string())
}

/// Whether `flow` switched to WebSocket.
pub(crate) fn is_websocket(flow: &HttpFlow) -> bool {
    flow.response.as_ref().is_some_and(|r| r.status == 101)
        && flow
            .request
            .headers
            .get("upgrade")
            .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
}

fn recorded_request(r: &Request, body: RecordedBody) -> RecordedRequest {
    let mut recorded = RecordedRequest {
        method: String::new(),
        scheme: String::new(),
        host: String::new(),
        port: 0,
        path: String::new(),
        version: String::new(),
        headers: Headers::with_capacity(r.headers.len()),
        body,
    };
    recorded.assign(r);
    recorded
}

impl RecordedRequest {
    /// Makes this the head of `r`, as recorded, in this one's storage (the body is
    /// left as it is).
    fn assign(&mut self, r: &Request) {
        let (scheme, path) = scheme_and_path(r);
        assign(&mut self.method, &r.method);
        assign(&mut self.scheme, scheme);
        assign(&mut self.host, &r.target.host);
        self.port = r.target.port;
        assign(&mut self.path, path);
        assign(&mut self.version, version_name(r.version));
        r.headers.compact_into(&mut self.headers);
    }
}

/// The scheme and path of `r` as recorded: a CONNECT names an authority, so it has
/// neither (as mitmproxy records it).
pub(crate) fn scheme_and_path(r: &Request) -> (&'static str, &str) {
    if r.is_connect() {
        ("", "")
    } else {
        (if r.target.tls { "https" } else { "http" }, r.path.as_str())
    }
}

/// The reason phrase of `r` as recorded: none for HTTP/2 (the one a response made
/// here may hold is not sent).
pub(crate) fn recorded_reason(r: &Response) -> &str {
    if r.version == Version::Http2 {
        ""
    } else {
        r.reason.as_str()
    }
}

pub(crate) fn recorded_response(r: &Response, body: RecordedBody) -> RecordedResponse {
    let mut recorded = RecordedResponse {
        status: 0,
        reason: String::new(),
        version: String::new(),
        headers: Headers::with_capacity(r.headers.len()),
        body,
    };
    recorded.assign(r);
    recorded
}

impl RecordedResponse {
    /// Makes this the head of `r`, as recorded, in this one's storage (the body is
    /// left as it is).
    fn assign(&mut self, r: &Response) {
        self.status = r.status;
        assign(&mut self.reason, recorded_reason(r));
        assign(&mut self.version, version_name(r.version));
        r.headers.compact_into(&mut self.headers);
    }
}

/// Writes `port` in decimal.
fn push_port(out: &mut String, port: u16) {
    out.push_str(itoa::Buffer::new().format(port));
}

/// `to` made `from`, in its own storage when it is large enough and not much larger
/// (a long path of one flow is not kept, unseen, in every record made after it).
fn assign(to: &mut String, from: &str) {
    if to.capacity() > 2 * from.len().max(64) {
        *to = from.to_owned();
    } else {
        to.clear();
        to.push_str(from);
    }
}

/// A version as records spell it, as mitmproxy does: `HTTP/1.0`, `HTTP/1.1`,
/// `HTTP/2.0`.
pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
        Version::Http2 => "HTTP/2.0",
    }
}

/// A version read from a capture, spelled as records spell it ([`version_name`]):
/// HTTP/2 is `HTTP/2.0` however the file wrote it (`HTTP/2`, `h2`, as this crate's
/// files before 0.x and browsers' HAR files do); an empty one is `HTTP/1.1`; anything else is upper-cased.
pub(crate) fn spelled_version(version: &str) -> String {
    match version.trim().to_ascii_lowercase().as_str() {
        "http/1.0" => "HTTP/1.0".into(),
        "http/1.1" | "" => "HTTP/1.1".into(),
        "http/2" | "http/2.0" | "h2" | "h2c" => "HTTP/2.0".into(),
        "http/3" | "http/3.0" | "h3" => "HTTP/3".into(),
        other => other.to_ascii_uppercase(),
    }
}

/// A body as the flow holds it: whole, or streamed past (`size` bytes, of which the
/// proxy kept `prefix` for `flow_finished`); either cut to `limit`, copied (into a
/// `spare` buffer, when one is large enough).
fn recorded_body(
    body: &Body,
    prefix: &Bytes,
    size: u64,
    limit: usize,
    spare: &mut Spare,
) -> RecordedBody {
    let (kept, size, truncated) = kept_body(body, prefix, size, limit);
    RecordedBody {
        // Copied: the bytes may share a larger buffer (a connection's read buffer),
        // which a queued record would otherwise keep alive.
        data: spare.copy(kept),
        size,
        truncated,
    }
}

/// What a record keeps of a body ([`recorded_body`]): the bytes kept (of the body
/// held whole, or of the `prefix` the proxy kept of one streamed past), cut to
/// `limit`; its size (`size` bytes seen, at least those kept); whether it was cut.
pub(crate) fn kept_body<'a>(
    body: &'a Body,
    prefix: &'a Bytes,
    size: u64,
    limit: usize,
) -> (&'a [u8], u64, bool) {
    match body {
        Body::Empty => (&[], 0, false),
        Body::Full(data) => {
            let kept = &data[..data.len().min(limit)];
            (kept, size.max(data.len() as u64), data.len() > limit)
        }
        Body::Streaming => {
            let kept = &prefix[..prefix.len().min(limit)];
            (kept, size.max(kept.len() as u64), size > kept.len() as u64)
        }
    }
}

/// The buffers of a record's bodies, taken for the bodies of the next record
/// ([`Record::remake`]).
#[derive(Default)]
struct Spare(Vec<BytesMut>);

impl Spare {
    /// Takes the buffer of `data`, when nothing else holds it (`data` is left empty
    /// either way).
    fn take(&mut self, data: &mut Bytes) {
        if let Ok(buffer) = std::mem::take(data).try_into_mut() {
            if buffer.capacity() > 0 {
                self.0.push(buffer);
            }
        }
    }

    /// `data`, copied into a spare buffer large enough (and not more than twice as
    /// large: a record's weight counts the bytes it holds, not its buffers), or into
    /// a new one.
    fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        let fits = |b: &BytesMut| (data.len()..=2 * data.len()).contains(&b.capacity());
        match self.0.iter().position(fits) {
            Some(i) => {
                let mut buffer = self.0.swap_remove(i);
                buffer.clear();
                buffer.extend_from_slice(data);
                buffer.freeze()
            }
            None => Bytes::copy_from_slice(data),
        }
    }
}

impl Record {
    /// The flow this record keeps, as hooks saw it finished, on a connection from its
    /// client: the heads, the bodies as kept (held whole; a cut one shorter than its
    /// size), the sizes and the replay mark, for what shows flows (`FlowDetail`). The
    /// error is not made again: [`error`](Self::error) has it as text.
    pub fn to_flow(&self) -> (Connection, HttpFlow) {
        let version = |v: &str| match v {
            "HTTP/1.0" => Version::Http10,
            "HTTP/2.0" | "HTTP/2" => Version::Http2,
            _ => Version::Http11,
        };
        let body = |b: &RecordedBody| match b.data.is_empty() {
            true => Body::Empty,
            false => Body::Full(b.data.clone()),
        };
        let mut client = crate::core::Host::default();
        client.addr = self.client;
        let conn = Connection::new(0, client);
        let mut request = self.request.to_request();
        request.version = version(&self.request.version);
        let mut flow = HttpFlow::new(1, request);
        flow.request_body_size = self.request.body.size;
        if let Some(r) = &self.response {
            let mut response = Response::new(r.status);
            response.reason = r.reason.clone();
            response.version = version(&r.version);
            response.headers = r.headers.clone();
            response.body = body(&r.body);
            flow.response_body_size = r.body.size;
            flow.response = Some(response);
        }
        flow.is_replay = match self.annotations.is_replay.as_deref() {
            Some("request") => Some(crate::http::message::Replay::Request),
            Some("response") => Some(crate::http::message::Replay::Response),
            _ => None,
        };
        (conn, flow)
    }
}

#[cfg(test)]
mod tests {
    use super::example;
    use super::*;
    use crate::core::{Host, Target};

    #[test]
    fn annotations_differ_when_either_side_has_one_that_the_other_has_not() {
        assert!(!differs("", ""));
        assert!(!differs(":star:", ":star:"));
        // Marked since the record was made, and unmarked since.
        assert!(differs("", ":star:"));
        assert!(differs(":star:", ""));
        assert!(differs("a", "b"));
    }

    fn flow(path: &str) -> HttpFlow {
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            path.into(),
        );
        HttpFlow::new(1, request)
    }

    #[test]
    fn bodies_are_kept_up_to_the_limit_and_marked_when_cut() {
        let none = Bytes::new();
        let whole = recorded_body(
            &Body::Full(Bytes::from_static(b"hello")),
            &none,
            5,
            16,
            &mut Spare::default(),
        );
        assert_eq!(
            (&whole.data[..], whole.size, whole.truncated),
            (&b"hello"[..], 5, false)
        );
        let cut = recorded_body(
            &Body::Full(Bytes::from_static(b"hello")),
            &none,
            5,
            2,
            &mut Spare::default(),
        );
        assert_eq!(
            (&cut.data[..], cut.size, cut.truncated),
            (&b"he"[..], 5, true)
        );
        let start = Bytes::from(vec![7u8; 32]);
        let streamed = recorded_body(&Body::Streaming, &start, 1 << 30, 16, &mut Spare::default());
        assert_eq!(
            (&streamed.data[..], streamed.size, streamed.truncated),
            (&[7u8; 16][..], 1 << 30, true)
        );
        let small = recorded_body(
            &Body::Streaming,
            &start.slice(..5),
            5,
            16,
            &mut Spare::default(),
        );
        assert_eq!(
            (&small.data[..], small.size, small.truncated),
            (&[7u8; 5][..], 5, false)
        );
        assert_eq!(
            recorded_body(&Body::Empty, &none, 0, 16, &mut Spare::default()),
            RecordedBody::default()
        );
    }

    #[test]
    fn a_record_remade_is_the_record_of_its_new_flow_in_the_old_ones_buffers() {
        let conn = Connection::new(1, Host::default());
        let with = |path: &str, request: &'static [u8], response: &'static [u8]| {
            let mut f = flow(path);
            f.request.body = Body::Full(Bytes::from_static(request));
            let mut r = Response::new(200);
            r.body = Body::Full(Bytes::from_static(response));
            f.response = Some(r);
            f
        };
        let first = with(
            "/first",
            b"a request body",
            b"a response body of some length",
        );
        let second = with("/second", b"another body", b"a response, shorter");
        let mut record = Record::from_flow(&conn, &first, 1024);
        let buffer = record.response.as_ref().unwrap().body.data.as_ptr();
        record.remake(&conn, &second, 1024);
        assert_eq!(record, Record::from_flow(&conn, &second, 1024));
        // The response body went into the first record's response buffer (the request
        // body is too short for it, and not more than twice shorter than the request's).
        assert_eq!(record.response.as_ref().unwrap().body.data.as_ptr(), buffer);

        // A buffer held elsewhere is not taken; nor is one more than twice too large; a
        // flow without a response or bodies is made all the same.
        let held = record.response.as_ref().unwrap().body.data.clone();
        let mut bare = flow("/bare");
        bare.error = Some(std::sync::Arc::new(crate::Error::ClientTimeout));
        record.remake(&conn, &bare, 1024);
        assert_eq!(record, Record::from_flow(&conn, &bare, 1024));
        assert_eq!(&held[..], b"a response, shorter");
        let mut record = Record::from_flow(&conn, &first, 1024);
        let tiny = with("/tiny", b"", b"ok");
        record.remake(&conn, &tiny, 1024);
        assert_eq!(record, Record::from_flow(&conn, &tiny, 1024));
        // Cut to the limit, in a buffer given back.
        let mut record = Record::from_flow(&conn, &first, 1024);
        record.remake(&conn, &second, 4);
        assert_eq!(record, Record::from_flow(&conn, &second, 4));
    }

    /// One record made again through flows unlike each other (with and without TLS,
    /// response, error, replay mark, server facts; a CONNECT; HTTP/2; more and fewer
    /// fields) is each time the record `from_flow` makes; its heads' and strings'
    /// storage is used again when large enough.
    #[test]
    fn a_record_remade_through_unlike_flows_is_each_time_their_record() {
        let plain = Connection::new(1, Host::default());
        let mut tls = Connection::new(2, Host::default());
        tls.tls = true;
        tls.tls_facts = example::client_tls();
        tls.server_facts = Some(std::sync::Arc::new(example::facts().server));
        tls.client_socket = example::facts().client;
        let with_fields = |path: &str, n: usize| {
            let mut f = flow(path);
            for i in 0..n {
                f.request
                    .headers
                    .append(format!("X-Field-{i}"), format!("value {i}"));
            }
            let mut r = Response::new(200);
            r.headers.append("Content-Type", "text/plain");
            r.headers.append("X-Empty", "");
            r.body = Body::Full(Bytes::from_static(b"body"));
            f.response = Some(r);
            f
        };
        let mut h2 = with_fields("/h2", 2);
        h2.request.version = Version::Http2;
        if let Some(r) = h2.response.as_mut() {
            r.version = Version::Http2;
            r.reason = "OK".into();
        }
        let mut replayed = with_fields("/replayed", 1);
        replayed.is_replay = Some(crate::http::message::Replay::Request);
        replayed.marked = ":star:".into();
        replayed.comment = "seen".into();
        let mut failed = flow("/failed");
        failed.error = Some(std::sync::Arc::new(crate::Error::ClientTimeout));
        let mut undelivered = with_fields("/undelivered", 1);
        undelivered.undelivered = true;
        let connect = HttpFlow::new(
            1,
            Request::new_to(
                "CONNECT".into(),
                Target::new("a.localhost", 443, false),
                "a.localhost:443".into(),
            ),
        );
        let flows = [
            (&plain, with_fields("/many", 12)),
            (&tls, with_fields("/few", 1)),
            (&plain, h2),
            (&tls, replayed),
            (&plain, failed),
            (&tls, undelivered),
            (&plain, connect),
            (&tls, with_fields("/many/again", 12)),
            (&plain, with_fields("/many/2", 12)),
        ];
        let mut record = Record::from_flow(flows[0].0, &flows[0].1, 1024);
        let mut reused = 0;
        for (conn, f) in &flows[1..] {
            let path = record.request.path.as_ptr();
            let fields = record
                .request
                .headers
                .iter()
                .next()
                .map(|(n, _)| n.as_ptr());
            let same_shape = record.request.headers.len() == f.request.headers.len()
                && record.request.path.capacity() >= f.request.path.len();
            record.remake(conn, f, 1024);
            assert_eq!(
                record,
                Record::from_flow(conn, f, 1024),
                "{}",
                f.request.path
            );
            if same_shape {
                assert_eq!(record.request.path.as_ptr(), path);
                let now = record
                    .request
                    .headers
                    .iter()
                    .next()
                    .map(|(n, _)| n.as_ptr());
                assert_eq!(now, fields, "the fields' buffer is used again");
                reused += 1;
            }
        }
        assert_eq!(reused, 1);
        // A long path is not kept, unseen, in the records made after it.
        let long = format!("/{}", "x".repeat(4000));
        record.remake(&plain, &with_fields(&long, 1), 1024);
        let short = with_fields("/short", 1);
        record.remake(&plain, &short, 1024);
        assert_eq!(record, Record::from_flow(&plain, &short, 1024));
        assert!(record.request.path.capacity() < 1000);
    }

    /// What making a record costs, made anew (and dropped) or made again in one given
    /// back (`remake`), for flows like mitm-bench's http-ka (a GET, a 1 KiB response
    /// held whole). Speed, not behaviour: run by hand, in release, `cargo test
    /// --release --lib capture::record::tests::record_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn record_speed() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("/1k");
        f.request.headers.append("Host", "127.0.0.1:8080");
        f.request.headers.append("User-Agent", "mitm-bench");
        f.request.headers.append("Accept", "*/*");
        let mut response = Response::new(200);
        response.headers.append("Server", "nginx/1.24.0");
        response
            .headers
            .append("Date", "Mon, 07 Dec 2026 17:00:00 GMT");
        response.headers.append("Content-Type", "text/plain");
        response.headers.append("Content-Length", "1024");
        response.headers.append("Connection", "keep-alive");
        response.body = Body::Full(Bytes::from(vec![b'x'; 1024]));
        f.response = Some(response);
        let n = 1_000_000u32;
        for round in 0..3 {
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(Box::new(Record::from_flow(&conn, &f, 1 << 20)));
            }
            let anew = start.elapsed().as_nanos() as f64 / f64::from(n);
            let mut record = Box::new(Record::from_flow(&conn, &f, 1 << 20));
            let start = std::time::Instant::now();
            for _ in 0..n {
                record.remake(&conn, &f, 1 << 20);
                std::hint::black_box(&record);
            }
            let again = start.elapsed().as_nanos() as f64 / f64::from(n);
            println!("round {round}: made anew {anew:.0} ns, made again {again:.0} ns a record");
        }
    }

    #[test]
    fn a_connect_is_recorded_as_its_authority_with_no_scheme_or_path() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("[::1]:8443");
        f.request.method = "CONNECT".into();
        f.request.target = Target::new("::1", 8443, true);
        assert_eq!(f.request.url(), "[::1]:8443");
        let r = Record::from_flow(&conn, &f, 0).request;
        assert!(r.is_connect());
        assert_eq!((r.scheme.as_str(), r.path.as_str()), ("", ""));
        assert_eq!(r.url(), "[::1]:8443");
    }

    #[test]
    fn http2_is_spelled_as_mitmproxy_spells_it() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("/");
        f.request.version = Version::Http2;
        let mut response = Response::new(200);
        response.version = Version::Http2;
        f.response = Some(response);
        let r = Record::from_flow(&conn, &f, 0);
        assert_eq!(r.request.version, "HTTP/2.0");
        let response = r.response.unwrap();
        assert_eq!(response.version, "HTTP/2.0");
        assert_eq!(response.reason, "", "HTTP/2 has no reason phrase");
        for (read, spelled) in [
            ("HTTP/2", "HTTP/2.0"),
            ("h2", "HTTP/2.0"),
            ("http/1.1", "HTTP/1.1"),
        ] {
            assert_eq!(spelled_version(read), spelled);
        }
    }

    #[test]
    fn a_request_not_delivered_keeps_its_error_and_no_response() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("/");
        f.response = Some(Response::new(502));
        f.error = Some(std::sync::Arc::new(crate::Error::ClientTimeout));
        // A refusal of the proxy's is an answer: kept with its error.
        let refused = Record::from_flow(&conn, &f, 0);
        assert_eq!(refused.response.map(|r| r.status), Some(502));
        f.undelivered = true;
        let failed = Record::from_flow(&conn, &f, 0);
        assert!(failed.response.is_none());
        assert!(failed.error.is_some());
    }

    #[test]
    fn urls_leave_default_ports_out_and_bracket_ipv6() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("/x?y");
        f.request.target = Target::new("::1", 443, true);
        assert_eq!(
            Record::from_flow(&conn, &f, 0).request.url(),
            "https://[::1]/x?y"
        );
        f.request.target = Target::new("h.localhost", 80, false);
        assert_eq!(
            Record::from_flow(&conn, &f, 0).request.url(),
            "http://h.localhost/x?y"
        );
        // Any other port is written, digit by digit.
        for port in [0, 1, 9, 10, 443, 8080, 65535] {
            f.request.target = Target::new("h.localhost", port, false);
            let record = Record::from_flow(&conn, &f, 0);
            assert_eq!(
                record.request.url(),
                format!("http://h.localhost:{port}/x?y")
            );
            assert_eq!(record.request.authority(), format!("h.localhost:{port}"));
        }
    }

    #[test]
    fn a_record_made_back_into_a_flow_shows_as_the_flow_did() {
        use crate::middleware::{Detail, FlowDetail};
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            "/a?q=1".into(),
        );
        let mut f = HttpFlow::new(1, request);
        f.request.headers.append("Host", "a.localhost:8080");
        f.request.version = Version::Http10;
        let mut response = Response::new(201);
        response.reason = "Created".into();
        response.headers.append("Content-Type", "text/plain");
        response.body = Body::Full(Bytes::from_static(b"made\n"));
        f.response = Some(response);
        f.response_body_size = 5;
        f.is_replay = Some(crate::http::message::Replay::Response);
        let conn = Connection::new(3, Host::new("127.0.0.1:40000".parse().unwrap()));
        let (back_conn, back) = Record::from_flow(&conn, &f, 1024).to_flow();
        for level in [Detail::Line, Detail::Headers, Detail::Full] {
            let detail = FlowDetail::new(level);
            assert_eq!(detail.render(&back_conn, &back), detail.render(&conn, &f));
        }
        assert!(FlowDetail::new(Detail::Line)
            .render(&back_conn, &back)
            .contains("[replay] << HTTP/1.1 201 Created 5b"));
    }
}

/// Connection facts with every field set, for the formats' round-trip tests: times on
/// whole quarters of a second (exact as float seconds).
#[cfg(test)]
pub(crate) mod example {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::RecordedFacts;
    use crate::core::{ServerFacts, SocketFacts, TlsFacts};
    use crate::http::websocket::WebSocketClose;

    fn at(quarters: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + quarters * 250)
    }

    /// The client's TLS: every field but certificates (a client shows none).
    pub(crate) fn client_tls() -> TlsFacts {
        TlsFacts {
            sni: Some("a.localhost".into()),
            alpn: Some("h2".into()),
            version: Some("TLSv1.3".into()),
            cipher: Some("TLS_AES_256_GCM_SHA384".into()),
            alpn_offers: vec!["h2".into(), "http/1.1".into()],
            certificates: Vec::new(),
        }
    }

    /// A WebSocket's close, by the server.
    pub(crate) fn close() -> WebSocketClose {
        WebSocketClose::recorded(1001, "going away".into(), false, at(9))
    }

    /// Both connections' facts (no WebSocket's close: see [`close`]).
    pub(crate) fn facts() -> RecordedFacts {
        RecordedFacts {
            client: SocketFacts {
                local: Some("127.0.0.1:8080".parse().unwrap()),
                started: Some(at(0)),
                tcp_setup: None,
                tls_setup: Some(at(1)),
            },
            server: ServerFacts {
                socket: SocketFacts {
                    local: Some("[::1]:40000".parse().unwrap()),
                    started: Some(at(1)),
                    tcp_setup: Some(at(2)),
                    tls_setup: Some(at(3)),
                },
                tls: TlsFacts {
                    sni: Some("a.localhost".into()),
                    alpn: Some("http/1.1".into()),
                    version: Some("TLSv1.2".into()),
                    cipher: Some("ECDHE-ECDSA-AES128-GCM-SHA256".into()),
                    alpn_offers: vec!["http/1.1".into()],
                    certificates: vec![
                        bytes::Bytes::from_static(b"0\x03\x02\x01\x01leaf"),
                        bytes::Bytes::from_static(b"0\x03\x02\x01\x02ca"),
                    ],
                },
            },
            websocket_close: None,
        }
    }
}

/// A record as a filter sees it.
impl crate::filter::Subject for Record {
    fn request(&self) -> crate::filter::RequestView<'_> {
        let r = &self.request;
        crate::filter::RequestView {
            method: &r.method,
            scheme: &r.scheme,
            host: &r.host,
            port: r.port,
            path: &r.path,
            headers: &r.headers,
            body: &r.body.data,
        }
    }

    fn response(&self) -> Option<crate::filter::ResponseView<'_>> {
        self.response.as_ref().map(|s| crate::filter::ResponseView {
            status: s.status,
            headers: &s.headers,
            body: &s.body.data,
        })
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    fn marked(&self) -> &str {
        &self.annotations.marked
    }

    fn comment(&self) -> &str {
        &self.annotations.comment
    }

    fn replay(&self) -> Option<crate::http::message::Replay> {
        match self.annotations.is_replay.as_deref()? {
            "request" => Some(crate::http::message::Replay::Request),
            "response" => Some(crate::http::message::Replay::Response),
            _ => None,
        }
    }

    fn is_websocket(&self) -> bool {
        self.websocket.is_some()
            // A record whose messages are not loaded (or not yet kept).
            || self.response.as_ref().is_some_and(|s| {
                s.status == 101 && s.headers.has_token("upgrade", "websocket")
            })
    }

    fn any_message(&self, each: &mut dyn FnMut(bool, &[u8]) -> bool) -> bool {
        self.websocket
            .iter()
            .flatten()
            .any(|m| each(m.from_client, &m.data))
    }
}
